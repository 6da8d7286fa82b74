// Loads a model and streams a completion of "In the beginning" to stdout through kiln's C# binding
// (Kiln.dll) from F#: the same task as samples/generate.c and the Python, Go, Rust and C# samples
// (a fixed seed, 40 tokens, the text on stdout and the speed on stderr).
// Documentation only: Debian has no F# compiler, so CI builds and runs samples/csharp/Generate.cs,
// which makes the same calls. With .NET: LD_LIBRARY_PATH=<dir of libkiln.so> dotnet fsi Generate.fsx [MODEL]
#r "Kiln.dll"

let prompt = "In the beginning"
let maxTokens = 40
let seed = 0xC0FFEEUL // the C sample's default seed: the same seed and options give the same text

let args = fsi.CommandLineArgs |> Array.skip 1
if args |> Array.exists (fun a -> a = "-h" || a = "--help") then
    printfn "usage: dotnet fsi Generate.fsx [MODEL]"
    printfn "Stream a %d-token completion of \"%s\" from MODEL (default: $KILN_MODEL, else" maxTokens prompt
    printfn "models/kjv-tiny relative to the current directory)."
    printfn "The text goes to stdout, the speed (tok/s) to stderr."
    exit 0

let modelPath =
    match args, System.Environment.GetEnvironmentVariable "KILN_MODEL" with
    | [| path |], _ -> path
    | _, env when not (System.String.IsNullOrEmpty env) -> env
    | _ -> "models/kjv-tiny"

let generate (path: string) =
    use rt = new Kiln.Runtime(Kiln.Backend.Cpu)
    use model = rt.LoadModel(path)
    use session = model.CreateSession(seed = System.Nullable seed)
    for piece in session.Generate(prompt, Kiln.GenerateOptions(MaxTokens = maxTokens)) do
        printf "%s" piece
        stdout.Flush()
    printfn ""
    let result = session.LastResult
    let tokensPerSecond = if result.DecodeSeconds > 0.0 then float result.NGenerated / result.DecodeSeconds else 0.0
    eprintfn "%d tokens, %.1f tok/s" result.NGenerated tokensPerSecond

generate modelPath
