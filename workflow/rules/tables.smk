# tables rules (being written)
