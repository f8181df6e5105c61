"""What users run on a trained model: reconstruct (drive the actor), walk, sample, and the side-by-side renderer."""
