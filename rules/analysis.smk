# analysis stage: see docs/DESIGN.md (being written)


def analysis_targets(model):
    return []
