# condense rules (being written)
