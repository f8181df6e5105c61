"""`facevae live`: a camera in the browser (or a clip) drives the actor in real time.

`driver.LiveDriver` turns frames into the actor's faces one at a time (the same face finding and
driving session as `facevae reconstruct`); `server` serves the page and its WebSocket on uvicorn."""
