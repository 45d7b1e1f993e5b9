"""The observer: a read-only view of a Shoal cluster and of how it changed over time.

It takes no part in scheduling or running jobs. `server` serves the web page, the JSON API, the
event stream and Prometheus metrics; `terminal` draws the same overview in a terminal. Both only
read the datastore through the `Store` interface, so starting or stopping them changes nothing.
"""
