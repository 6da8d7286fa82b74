using System;
using System.Runtime.InteropServices;
using System.Text;
using Kiln.Raw;

namespace Kiln
{
    /// <summary>kiln_status values (taken from the SWIG-generated kiln_status).</summary>
    public enum Status
    {
        Ok = kiln_status.KILN_OK, InvalidArgument = kiln_status.KILN_ERR_INVALID_ARGUMENT,
        NotFound = kiln_status.KILN_ERR_NOT_FOUND, IO = kiln_status.KILN_ERR_IO, Format = kiln_status.KILN_ERR_FORMAT,
        Unsupported = kiln_status.KILN_ERR_UNSUPPORTED, OutOfMemory = kiln_status.KILN_ERR_OUT_OF_MEMORY,
        BufferTooSmall = kiln_status.KILN_ERR_BUFFER_TOO_SMALL, OutOfRange = kiln_status.KILN_ERR_OUT_OF_RANGE,
        ContextFull = kiln_status.KILN_ERR_CONTEXT_FULL, Cancelled = kiln_status.KILN_ERR_CANCELLED,
        Backend = kiln_status.KILN_ERR_BACKEND, Busy = kiln_status.KILN_ERR_BUSY,
        VersionMismatch = kiln_status.KILN_ERR_VERSION_MISMATCH, Internal = kiln_status.KILN_ERR_INTERNAL,
    }

    /// <summary>A failed kiln call: its status, the status's name and kiln's message.</summary>
    public class KilnException : Exception
    {
        public Status Status { get; private set; }
        public string StatusName { get; private set; }
        public string KilnMessage { get; private set; }

        public KilnException(Status status, string message)
            : base(kiln_c.kiln_status_name((kiln_status)status) + ": " + message)
        {
            Status = status;
            StatusName = kiln_c.kiln_status_name((kiln_status)status);
            KilnMessage = message;
        }

        /// <summary>Throws for a failed status, with kiln_last_error() (call on the same thread).</summary>
        internal static void Check(kiln_status status)
        {
            if (status != kiln_status.KILN_OK) throw new KilnException((Status)status, kiln_c.kiln_last_error());
        }
    }

    /// <summary>kiln.h's tokenize/detokenize flags.</summary>
    internal static class Flags
    {
        internal static uint Tokenize(bool addSpecial, bool parseSpecial)
        {
            return (addSpecial ? (uint)kiln_c.KILN_TOKENIZE_ADD_SPECIAL : 0u)
                | (parseSpecial ? (uint)kiln_c.KILN_TOKENIZE_PARSE_SPECIAL : 0u);
        }

        internal static uint Detokenize(bool skipSpecial)
        {
            return skipSpecial ? (uint)kiln_c.KILN_DETOKENIZE_SKIP_SPECIAL : 0u;
        }
    }

    internal static class Utf8
    {
        internal static string Read(IntPtr p)
        {
            if (p == IntPtr.Zero) return "";
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            return Read(p, n);
        }

        internal static string Read(IntPtr p, int n)
        {
            var bytes = new byte[n];
            if (n > 0) Marshal.Copy(p, bytes, 0, n);
            return Encoding.UTF8.GetString(bytes);
        }

        internal static byte[] Bytes(string s) { return Encoding.UTF8.GetBytes(s); }

        internal static byte[] CString(string s)
        {
            var b = Encoding.UTF8.GetBytes(s);
            Array.Resize(ref b, b.Length + 1);
            return b;
        }
    }

    /// <summary>kiln.h's buffer protocol: ask for the size with no buffer, then fill one of that size.</summary>
    internal static class Buffers
    {
        internal delegate kiln_status Call<T>(T[] buffer, ulong capacity, out ulong needed);

        internal static T[] Fill<T>(Call<T> call)
        {
            ulong needed;
            var status = call(null, 0, out needed);
            if (status != kiln_status.KILN_ERR_BUFFER_TOO_SMALL) KilnException.Check(status);
            var buffer = new T[(int)needed];
            KilnException.Check(call(buffer, (ulong)buffer.Length, out needed));
            if ((int)needed != buffer.Length) Array.Resize(ref buffer, (int)needed);
            return buffer;
        }
    }
}
