# data stage: see docs/DESIGN.md (being written)
