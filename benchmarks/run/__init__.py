"""What a run costs beyond training: overhead, re-prediction, threads, the image check, Ray."""
