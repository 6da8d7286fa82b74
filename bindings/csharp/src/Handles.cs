// SafeHandles of kiln's handles. A child handle holds a reference on its parent's SafeHandle, so
// a runtime is freed only after its models and sessions, whatever order Dispose or the finalizer
// thread gets to them (kiln.h requires that order).
using System;
using System.Runtime.InteropServices;
using Kiln.Raw;

namespace Kiln
{
    internal sealed class RuntimeHandle : SafeHandle
    {
        // The runtime's log sink: kiln holds its function pointer until kiln_runtime_free.
        internal kiln_c.LogFn Log;

        internal RuntimeHandle() : base(IntPtr.Zero, true) { }
        internal RuntimeHandle(IntPtr raw) : base(IntPtr.Zero, true) { SetHandle(raw); }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        protected override bool ReleaseHandle()
        {
            kiln_c.kiln_runtime_free(new kiln_c.Unowned(handle));
            Log = null;
            return true;
        }
    }

    /// <summary>A child handle that keeps its parent handle open until it is released.</summary>
    internal abstract class ChildHandle : SafeHandle
    {
        private SafeHandle parent;

        protected ChildHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        /// <summary>The handle this one keeps open (a model's or a trainer's runtime).</summary>
        internal SafeHandle Parent { get { return parent; } }

        internal void Adopt(IntPtr raw, SafeHandle parentHandle)
        {
            bool added = false;
            parentHandle.DangerousAddRef(ref added);
            parent = parentHandle;
            SetHandle(raw);
        }

        protected abstract void Free(IntPtr raw);

        protected override bool ReleaseHandle()
        {
            Free(handle);
            parent.DangerousRelease();
            return true;
        }
    }

    internal sealed class ModelHandle : ChildHandle
    {
        protected override void Free(IntPtr raw) { kiln_c.kiln_model_free(new kiln_c.Unowned(raw)); }
    }

    internal sealed class SessionHandle : ChildHandle
    {
        protected override void Free(IntPtr raw) { kiln_c.kiln_session_free(new kiln_c.Unowned(raw)); }
    }
}
