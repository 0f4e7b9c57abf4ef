"""The sample shop domain: users, their purchases and page views, and features over them.

``streamfs apply topology/`` registers every Entity, Source and FeatureView declared
at module level in these files. They drive the demo, the tests and the benchmarks.
"""
