#!/usr/bin/env python3
"""hashget.py -- GET a URL and print the sha256 digest of the body: a verifying client.

Usage: hashget.py URL        (prints "sha256:<hex>"; exits 1 on a non-200 answer)
One process, 1 MiB reads, hashlib (OpenSSL, with the CPU's SHA extensions where it has them):
the cheapest way to receive and verify a blob with standard tools, without a pipe between a
downloader and a hasher.
"""
import hashlib
import http.client
import sys
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
conn = http.client.HTTPConnection(url.hostname, url.port or 80)
conn.request("GET", url.path + (f"?{url.query}" if url.query else ""))
response = conn.getresponse()
if response.status != 200:
    sys.exit(f"hashget: {sys.argv[1]}: HTTP {response.status}")
digest = hashlib.sha256()
while chunk := response.read(1 << 20):
    digest.update(chunk)
print("sha256:" + digest.hexdigest())
