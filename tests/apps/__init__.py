"""Small ASGI applications that tests run in real uvicorn subprocesses."""
