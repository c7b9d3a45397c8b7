def longest_word(path):
    with open(path, encoding="utf-8") as f:
        words = f.read().split()
    top = 
    return top.lower()


# `make demo` asks for completions at line 4, column 11: the expression after `top = `.
