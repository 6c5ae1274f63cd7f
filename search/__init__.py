"""DetNAS' evolutionary search (and random search) over a detection supernet, under a latency target.

A registered algorithm (`algorithms`: evolution or random search, with `operators`) proposes each generation; the
search loop (`evolution.Search`) plans, evaluates, journals, resumes and shares the work under torchrun, ranking
by a registered objective (`objectives`). It talks to small interfaces (`interfaces`): an accuracy evaluator
(real one: `evaluators.DetectionAP`, which materialises the path and recalibrates BN, see `bn`) and a latency
estimator (`latency`: the bench oracle or a device profile). Its typed records (`records`) land in a JSONL
`journal`, from which `report` draws the results; `runner` wires it all for `detnas search` (`cli`).
"""
