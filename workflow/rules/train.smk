# train rules (being written)
