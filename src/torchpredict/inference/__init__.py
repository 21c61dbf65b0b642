"""The infer stage: tensors.py moves model inputs to the device and runs one forward pass, decoding.py the
seq2seq decoding loops, rebatching.py cuts rows from many sources into model batches of one size."""
