"""Driving: what training fits for it, the actor's footage in latent space, the driving modes, and ActorModel."""
