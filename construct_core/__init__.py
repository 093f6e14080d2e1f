"""The bottom layer: plain Python that every other package may import, and that imports no Django."""
