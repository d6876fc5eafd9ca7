"""Input and output: the one image loader (:mod:`.images`), folders and batches of images with their skipped-files
lists (:mod:`.folders`), atomic file writes (:mod:`.atomic`) and progress reporting (:mod:`.progress`)."""
