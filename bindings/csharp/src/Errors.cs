using System;
using System.Runtime.InteropServices;
using System.Text;

namespace Kiln
{
    /// <summary>kiln_status values.</summary>
    public enum Status
    {
        Ok = 0, InvalidArgument = 1, NotFound = 2, IO = 3, Format = 4, Unsupported = 5, OutOfMemory = 6,
        BufferTooSmall = 7, OutOfRange = 8, ContextFull = 9, Cancelled = 10, Backend = 11, Busy = 12,
        VersionMismatch = 13, Internal = 14,
    }

    /// <summary>A failed kiln call: its status, the status's name and kiln's message.</summary>
    public class KilnException : Exception
    {
        public Status Status { get; private set; }
        public string StatusName { get; private set; }
        public string KilnMessage { get; private set; }

        public KilnException(Status status, string message)
            : base(Utf8.Read(Native.kiln_status_name((int)status)) + ": " + message)
        {
            Status = status;
            StatusName = Utf8.Read(Native.kiln_status_name((int)status));
            KilnMessage = message;
        }

        /// <summary>Throws for a failed status, with kiln_last_error() (call on the same thread).</summary>
        internal static void Check(int status)
        {
            if (status != 0) throw new KilnException((Status)status, Utf8.Read(Native.kiln_last_error()));
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
        internal delegate int Call<T>(T[] buffer, UIntPtr capacity, out UIntPtr needed);

        internal static T[] Fill<T>(Call<T> call)
        {
            UIntPtr needed;
            int status = call(null, UIntPtr.Zero, out needed);
            if (status != (int)Status.BufferTooSmall) KilnException.Check(status);
            var buffer = new T[(int)needed];
            KilnException.Check(call(buffer, (UIntPtr)buffer.Length, out needed));
            if ((int)needed != buffer.Length) Array.Resize(ref buffer, (int)needed);
            return buffer;
        }
    }
}
