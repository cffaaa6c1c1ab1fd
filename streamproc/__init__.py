"""streamproc: live leaderboards for livestream commerce, from Kafka through Faust to ClickHouse."""

__version__ = "0.1.0"
