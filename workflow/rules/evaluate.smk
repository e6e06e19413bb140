# evaluate rules (being written)
