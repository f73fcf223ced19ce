// The sample job `make run` sends: greets and sums.
export async function main(name: string = "world", numbers: number[] = [1, 2, 3]) {
  console.log(`hello, ${name}`);
  return { greeting: `hello, ${name}`, sum: numbers.reduce((a, b) => a + b, 0) };
}
