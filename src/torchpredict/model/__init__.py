"""The model of a bundle: storage.py saves and loads it (an exported program or weights), export_reader.py reads
a .pt2 without unpickling, factories.py resolves trusted model factories, checkpoints.py reads training
checkpoints, and sources.py, symbolic.py and torch_loader.py are the guarded paths that may run code."""
