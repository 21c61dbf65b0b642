"""The interpret stage: output heads read a model's raw outputs as named, typed prediction columns.

base.py defines what a head is and the checks every family shares; regression.py (Regression, RawOutput),
classification.py and sequences.py hold the families, outputs.py picks a model output, labels.py maps class
indices to labels, and registry.py rebuilds any head from its manifest entry.
"""
