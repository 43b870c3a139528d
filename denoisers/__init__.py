"""Image denoisers for denoised smoothing (knows images, nothing of vendors)."""
