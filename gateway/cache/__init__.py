"""The response cache: keys partitioned by scope, stored answers, the stores that hold them."""
