"""Regions of a picture (crops, rotations, flips, detected pasted pictures) and the proposers that choose them."""
