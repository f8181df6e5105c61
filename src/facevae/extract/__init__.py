"""Videos to aligned, filtered face crops: the actor's footage (extract stage) and a driver's faces."""
