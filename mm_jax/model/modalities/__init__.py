"""Modality nets of the MultiModel (docs/model.md, "Modality nets").

  language     input/target embeddings and the softmax (shared vocabulary)
  image        Xception entry flow: pixels -> [B, Y', X', D] grid
  categorical  Xception exit flow: body output grid -> class logits
  audio        ConvRes stack over log-mel (or waveform) -> [B, frames', D]
  task_token   learned target-space embedding placed at decoder position 0
"""
