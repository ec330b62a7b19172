# causal stage: see docs/DESIGN.md (being written)


def causal_targets(model):
    return []
