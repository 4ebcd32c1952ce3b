"""A CherryPy app served on HTTP and HTTPS at once, as CherryPy's docs show it
(a second cherrypy._cpserver.Server with its own port and certificate,
subscribed to the engine). Unchanged, it runs under anyserve on any server that
serves several listeners with TLS:

    anyserve -s cheroot cherrypy_http_https:app

anyserve listens where cherrypy.server says (socket_host, socket_port) and where
each other subscribed server says, with that server's certificate; CherryPy's
own servers bind nothing.
"""

import cherrypy


class Root:
    @cherrypy.expose
    def index(self):
        return f"Hello over {cherrypy.request.scheme}"


app = cherrypy.tree.mount(Root())

cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": 8080})

server2 = cherrypy._cpserver.Server()
server2.socket_port = 8443
server2._socket_host = "127.0.0.1"
server2.ssl_certificate = "/etc/ssl/certs/myapp.pem"
server2.ssl_private_key = "/etc/ssl/private/myapp.key"
server2.subscribe()

if __name__ == "__main__":
    cherrypy.engine.start()
    cherrypy.engine.block()
