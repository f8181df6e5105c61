"""The VAE: encoder, decoders, losses, the decoder phase's discriminator and the model.pt file."""
