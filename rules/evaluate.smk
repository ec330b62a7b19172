# evaluate stage: see docs/DESIGN.md (being written)


def evaluate_targets(model):
    return []
