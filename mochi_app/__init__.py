"""Mochi video studio: text to video on Genmo's Mochi 1, queued through RQ on Redis."""
