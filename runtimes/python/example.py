"""The sample job `make run` sends: greets and sums."""


def main(name: str = "world", numbers: list[int] | None = None) -> dict[str, object]:
    numbers = numbers or [1, 2, 3]
    print(f"hello, {name}")
    return {"greeting": f"hello, {name}", "sum": sum(numbers)}
