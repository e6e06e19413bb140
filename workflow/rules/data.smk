# data rules (being written)
