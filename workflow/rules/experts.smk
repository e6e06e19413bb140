# experts rules (being written)
