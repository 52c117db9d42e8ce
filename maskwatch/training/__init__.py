"""Training the mask/no-mask head-crop classifier (optional extra: needs torch)."""
