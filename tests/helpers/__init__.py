"""What several test modules share: paths, tiny configs, and the test videos they encode.

Test modules import from here and never from each other.
"""
