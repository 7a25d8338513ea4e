"""Pixel statistics: histograms of pixel values, detector linearity."""
