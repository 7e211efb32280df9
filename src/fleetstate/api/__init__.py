"""aiohttp adapters: decode the request, call the domain, encode the answer."""
