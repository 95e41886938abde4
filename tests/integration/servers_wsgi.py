# SPDX-License-Identifier: MIT
"""servers_wsgi.py - the WSGI application gunicorn serves in test_servers.py: who answered."""
import os


def app(environ, start_response):
    # The pid of the gunicorn worker that ran the request, and its batond generation.
    body = f"pid={os.getpid()} gen={os.environ.get('BATON_GENERATION', '0')}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
