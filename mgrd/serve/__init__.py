"""`mgrd serve`: an OpenAI-compatible chat server (audio in, reasoning split out, streaming, speech out).

`scheduler.py` batches concurrent requests into shared decoding steps, `protocol.py` holds the OpenAI request
and response shapes and turns requests into prompts, `app.py` the FastAPI routes, `tts.py` the spoken answer,
`cli.py` the command line, `static/` the playground page. It imports nothing from training.
"""
