"""The device-free estimate against timm's published RTX 3090 runs: the recipe, the runs, the split and the fits
(imported by the scripts here, by gpu/ and planning/, and by the tests)."""
