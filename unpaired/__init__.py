"""unpaired: deblurring trainers for real photographs that have no sharp twin."""
