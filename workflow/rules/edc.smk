# edc rules (being written)
