"""What the tests share: real data, models, training runs, exports, servers and fuzzers.

Test modules and conftests import from here, never from one another.
"""
