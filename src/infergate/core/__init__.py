"""Engine-neutral vocabulary: requests, outputs, errors and the engine seam. Imports nothing from infergate."""
