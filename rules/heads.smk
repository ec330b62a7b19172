# heads stage: see docs/DESIGN.md (being written)


def heads_targets(model):
    return []
