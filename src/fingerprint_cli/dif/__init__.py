"""Deep Image Fingerprints (Sinitsa & Fried, WACV 2024): residuals, extraction, detection, baselines."""
