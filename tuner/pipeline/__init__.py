"""Pipeline repositories: a Triton model repository whose top model is an ensemble, or a python
(BLS) model calling other models, searched as one deployment with knobs per composing model."""
