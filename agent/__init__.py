"""The agent, a library without Django: the think → tool → observe loop (`loop`), its model client
(`client`), context budget (`context`) and tools (`tools`, reading a host's documents through the
`corpus.Corpus` protocol), the one event format (`events`), and the turn-event stream in Redis with its
cancel flag (`stream`) that the worker's publisher (`publisher`) writes. The host application (kimiweb's
`chat` app) runs turns in Celery, records them in Postgres and injects what tools need."""
