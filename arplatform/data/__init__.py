"""Image files in, image files out: the datasets the tokenizer reads (`datasets`) and the
uint8 grids and PNGs every stage writes (`images`)."""
