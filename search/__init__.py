"""DetNAS' evolutionary search (and random search) over a detection supernet, under a latency target.

The algorithm (`evolution`, `operators`, `objectives`) talks to small interfaces (`interfaces`): an accuracy
evaluator (real one: `evaluators.DetectionAP`, which materialises the path and recalibrates BN, see `bn`) and a
latency estimator (`latency`: the bench oracle or a device profile). Every candidate lands in a JSONL
`journal`, from which `report` draws the results; `runner` wires it all for `detnas search run` (`cli`).
"""
