"""The TGI / HF Inference API text generation protocol (`/`, `/models/{id}`, `/generate`, `/generate_stream`)."""
