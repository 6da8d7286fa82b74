// Loads a model and streams a completion of "In the beginning" to stdout through kiln's C# binding
// (Kiln.dll): the same task as samples/generate.c and the Python, Go, Rust and F# samples (a fixed
// seed, 40 tokens, the text on stdout and the speed on stderr).
//   mcs -r:Kiln.dll Generate.cs && LD_LIBRARY_PATH=<dir of libkiln.so> MONO_PATH=<dir of Kiln.dll> mono Generate.exe
using System;

static class Generate
{
    const string Prompt = "In the beginning";
    const int MaxTokens = 40;
    const ulong Seed = 0xC0FFEE; // the C sample's default seed: the same seed and options give the same text

    static void Usage(System.IO.TextWriter output)
    {
        output.WriteLine("usage: Generate.exe [MODEL]");
        output.WriteLine("Stream a {0}-token completion of \"{1}\" from MODEL (default: $KILN_MODEL, else", MaxTokens, Prompt);
        output.WriteLine("models/kjv-tiny relative to the current directory).");
        output.WriteLine("The text goes to stdout, the speed (tok/s) to stderr.");
    }

    static int Main(string[] args)
    {
        if (Array.Exists(args, a => a == "-h" || a == "--help"))
        {
            Usage(Console.Out);
            return 0;
        }
        if (args.Length > 1)
        {
            Usage(Console.Error);
            return 2;
        }
        string model = args.Length == 1 ? args[0] : Environment.GetEnvironmentVariable("KILN_MODEL");
        if (string.IsNullOrEmpty(model)) model = "models/kjv-tiny";
        try
        {
            Run(model);
            return 0;
        }
        catch (Kiln.KilnException e)
        {
            Console.Error.WriteLine("Generate: " + e.Message);
            return 1;
        }
    }

    static void Run(string modelPath)
    {
        using (var rt = new Kiln.Runtime(Kiln.Backend.Cpu))
        using (var model = rt.LoadModel(modelPath))
        using (var session = model.CreateSession(seed: Seed))
        {
            foreach (var piece in session.Generate(Prompt, new Kiln.GenerateOptions { MaxTokens = MaxTokens }))
            {
                Console.Write(piece);
                Console.Out.Flush();
            }
            Console.WriteLine();
            var result = session.LastResult;
            double tokensPerSecond = result.DecodeSeconds > 0 ? result.NGenerated / result.DecodeSeconds : 0;
            Console.Error.WriteLine("{0} tokens, {1:F1} tok/s", result.NGenerated, tokensPerSecond);
        }
    }
}
